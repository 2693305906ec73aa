-- sacmrun examples/policy.lua check|test ...: check and test policy files before they reach a grid
-- (installed as sacm-policy; see docs/policies.md and sacm-policy --help).
sacm.exit(require("sacm.cli.policy").main(arg))
