"""Everything that touches torch: the proxy fine-tune engine, method plugins, Hessian probes, studies.

`advisor` (specs, science, storage) never imports this package at module top, so the API, dashboard and
CI hook load without torch.
"""
