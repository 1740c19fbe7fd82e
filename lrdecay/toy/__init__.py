"""The toy model of Section 3 (Figures 3 and 4): its instance, closed forms, simulators, checks
and figures, a pipeline of its own that shares only plumbing and the figure style with the rest."""
