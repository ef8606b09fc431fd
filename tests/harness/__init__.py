"""The test harness: the control plane, the API emulator, the test node, media."""
