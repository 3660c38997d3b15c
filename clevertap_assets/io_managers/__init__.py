"""One IO manager per destination, all loading `EventBatch`es with the same guarantees."""
