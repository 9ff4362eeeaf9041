"""The Python side of a sandcell session: the template that forks sessions, the kernel
that drives IPython inside each one, and the framing they share with the Rust host."""
