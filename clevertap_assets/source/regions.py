"""CleverTap's regions and the API host of each, for the client and for the settings that
check `CLEVERTAP_REGION`."""

from clevertap_assets.errors import SettingsError

REGION_HOSTS: dict[str, str] = {
    "eu1": "api.clevertap.com",
    "in1": "in1.api.clevertap.com",
    "sg1": "sg1.api.clevertap.com",
    "us1": "us1.api.clevertap.com",
    "aps3": "aps3.api.clevertap.com",
    "mec1": "mec1.api.clevertap.com",
    "sk1": "sk1.api.clevertap.com",
}
REGION_ALIASES = {"global": "eu1"}


def normalise_region(region: str) -> str:
    """Accept the dashboard's `global` and any casing; refuse what CleverTap has no host for."""
    code = region.strip().lower()
    code = REGION_ALIASES.get(code, code)
    if code not in REGION_HOSTS:
        allowed = ", ".join([*REGION_HOSTS, *REGION_ALIASES])
        raise SettingsError(
            f"CLEVERTAP_REGION={region!r} is not a CleverTap region; allowed: {allowed}"
        )
    return code


def base_url_for(region: str, api_url: str | None) -> str:
    """The REST root to call: an explicit URL (emulator, proxy) wins over the region's host."""
    if api_url:
        return api_url.rstrip("/")
    return f"https://{REGION_HOSTS[normalise_region(region)]}"
