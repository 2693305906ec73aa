-- busted output handler: the usual terminal output, then one closing line CI tools read:
-- "N passed, N failed, N skipped" (errors count as failed).
return function(options)
  local busted = require "busted"
  local handler = require("busted.outputHandlers.utfTerminal")(options)

  busted.subscribe({ "suite", "end" }, function()
    io.write(("\n%d passed, %d failed, %d skipped\n"):format(
      handler.successesCount, handler.failuresCount + handler.errorsCount, handler.pendingsCount))
    io.flush()
    return nil, true
  end, { priority = 2 })

  return handler
end
