"""Model bundles (`carseg.bundle/1`): export a trained F and G as a folder, load one back."""
