"""Pure archive logic: names, selections, manifests and the ZIP layout. Imports no IO library."""
