"""The data plane: a storage node serving one tier driver over TCP.

Rooms: ``server`` (StorageNode: the listener, jobs, epochs, draining), ``session`` (one client
connection: frames in, requests served), ``objects`` (GET_RANGES and COPY), ``shared`` (the
co-located half: leases and reservations of the tier's memory handed to a local client),
``waits`` (WAIT until keys exist), ``agent`` (registration and heartbeats to the controller).
A node imports its tier and the bottom floor, never the client or the controller.
"""
