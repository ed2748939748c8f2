"""Bridges to engines that run edgecnn models at scale; each imports its engine only when used (see ``ray``)."""
