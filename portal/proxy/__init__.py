"""The authenticated notebook proxy: each workspace on its own origin, behind the portal's login."""
