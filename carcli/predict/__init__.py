"""`predict`: samples, F's probabilities and uncertainty, and proposals for new images."""
