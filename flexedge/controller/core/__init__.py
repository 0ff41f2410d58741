"""The pure core: plain data and an explicit `now` in, plain data out.

Nothing in this package opens a socket, reads a clock or touches SQLite. Times are UTC epoch
seconds (float), power is kW, energy kWh, with the site sign convention (> 0 injection).
"""
