"""The HTTP API (spec §7): listmonk, GreenArrow, Mailcoach and Mailrith import APIs and a web page, on the job service."""
