"""flexedge: an edge controller that bids site flexibility into balancing markets."""
