-- sacmrun examples/assess.lua --config grid.conf [options]: one assessment with a report and an
-- exit status for CI (installed as sacm-assess; see docs/deploy.md and sacm-assess --help).
sacm.exit(require("sacm.cli.assess").main(arg))
