"""Device simulators: physics models served over Modbus TCP/RTU and MQTT, with fault injection."""
