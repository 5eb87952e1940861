# Suites under broken/ and malformed/ fail on purpose; tests/test_testing*.py copy and run
# them. Keep them out of a plain `pytest` run (the good/ suite is collected as usual).
collect_ignore_glob = ["broken/*", "malformed/*"]
