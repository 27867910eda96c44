"""The workload core shared by workspaces and jobs: fields, states, events, the container spec."""
