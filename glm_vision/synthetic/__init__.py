"""Not used at run time: a tiny random-weight checkpoint of the real architecture (`tiny`), and the
synthetic scenes, questions and fonts (`scenes`) that the demo model is trained and evaluated on and
that tests and CPU benchmarks draw their pictures from."""
