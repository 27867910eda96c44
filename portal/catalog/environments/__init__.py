"""Team environments: versioned recipes on top of catalog images, built, locked and shared."""
