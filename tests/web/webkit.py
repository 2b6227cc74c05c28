"""What the web tests share besides fixtures: the tokens of the session's console."""

OPERATOR = "op-token-0123456789abcdef"
READER = "reader-token-0123456789abcdef"
