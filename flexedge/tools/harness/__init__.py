"""Running a site from a tool or a test: a private broker, child processes, a scripted market."""
