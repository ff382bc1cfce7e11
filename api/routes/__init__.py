"""One router per resource of the node API."""
