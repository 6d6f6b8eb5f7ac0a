// `r1 plan`: will this model fit this cluster, and how to launch it (planner/planner.h).
#pragma once

#include <string>
#include <vector>

#include "CLI/CLI.hpp"

namespace r1 {

// Adds the `plan` subcommand to `app`. It takes its arguments whole (its own parser, so bad
// input exits with code 2 and `r1 plan --help` documents every flag): run it with
// RunPlan(subcommand->remaining()).
CLI::App* AddPlanCommand(CLI::App& app);
// Runs `r1 plan ARGS...`: 0 when a plan was printed (whether or not it fits), 2 on bad input.
int RunPlan(const std::vector<std::string>& args);

}  // namespace r1
