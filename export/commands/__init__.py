"""``vae-train``'s commands: one module per command (``NAME``, ``SUMMARY``, ``DESCRIPTION``,
``add_arguments``, ``run``), their shared flags and exit handling, and the work behind ``train``
(``pipeline``, ``run_output``, ``report``) and ``calibrate`` (``recalibrate``)."""
