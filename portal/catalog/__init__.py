"""The image catalog: curated images, their revisions, builds and pulls."""
