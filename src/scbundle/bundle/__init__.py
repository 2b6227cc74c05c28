"""Building a bundle: requirements, command lists, allocation, multi-prog packing, files."""
