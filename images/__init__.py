"""Runner images: the base built offline from Debian's packages, the runner on top."""
