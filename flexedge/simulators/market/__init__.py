"""The market simulator: a D3A balancing agent, a Power TAC utility, YAML scenarios."""
