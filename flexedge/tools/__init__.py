"""Tools on top of the daemon and simulators: demo, benchmarks, scorecard."""
