"""EAGLE gateway protocols: pure parsers (`parse`, `parse200`), readings (`readings`), how to
reach a gateway (`gateway`), one client per protocol (`eagle100`, `eagle200`) behind `client`."""
