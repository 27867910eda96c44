"""Users, teams, memberships, roles and API tokens."""
