//! I/O around ha-core: authenticated heartbeat transport, tokio node runtime, floating IP, ping nodes.
