"""One module per scenario: ``measure`` returns its raw measurements, ``report`` turns
them into a ``Result`` (figures beside their ceilings), ``run`` does both."""
