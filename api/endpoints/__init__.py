"""The REST API's endpoints, one module per part of the studio; each a few lines: read the
input, check it as the page does, call one service, answer."""
