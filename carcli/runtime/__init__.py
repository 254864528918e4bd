"""What training, sampling and prediction share at run time: the device and thread set-up
(`device`), networks saved to and loaded from checkpoints (`networks`), and the speed
options applied to a network (`speed`); and whether the artefacts a stage reads are still
what they were made from (`staleness`)."""
