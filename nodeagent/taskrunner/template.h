#pragma once
// Task templates: mustache text rendered into a file under the task directory before the task
// starts (spec.tasks[].templates).
//
// Rendering is the mustache spec's core: {{name}} (HTML-escaped, as the spec says), {{{name}}} and
// {{& name}} (raw), {{#name}}...{{/name}} (shown when name is set, non-empty and not "false"/"0"),
// {{^name}}...{{/name}} (the inverse), {{! comment}}. The variables are the task's environment
// (FOXDEN_* and spec.env). An unknown variable renders empty, as in mustache; an unclosed tag or
// section is an error.
//
// Writing never leaves the allocation: `destination` is relative to the task directory (local/...,
// secrets/..., tmp/...) or "../alloc/..." for the group's shared directory; absolute paths and any
// other ".." are refused, and every step is resolved with openat2(RESOLVE_BENEATH |
// RESOLVE_NO_SYMLINKS), so a symlink a task planted (say /alloc/x -> /etc) makes the render fail
// instead of writing on the host. The file is written to a temporary name and renamed into place.

#include <sys/types.h>

#include <map>
#include <string>
#include <string_view>

#include "kube/status.h"

namespace nodeagent {

[[nodiscard]] kube::StatusOr<std::string> renderMustache(std::string_view text,
                                                         const std::map<std::string, std::string>& vars);

// Parses "0644" / "644" into a mode; nullopt-like error for anything else.
[[nodiscard]] kube::StatusOr<mode_t> parseFileMode(const std::string& perms);

// Writes `data` at `destination` (see above) with `mode`, owned by `uid`/`gid` (the task's user,
// so a task running as nobody can read its 0600 secrets); -1 keeps the agent's.
[[nodiscard]] kube::Status writeTaskFile(const std::string& taskDir, const std::string& allocDir,
                                         const std::string& destination, std::string_view data, mode_t mode,
                                         uid_t uid = static_cast<uid_t>(-1), gid_t gid = static_cast<gid_t>(-1));

}  // namespace nodeagent
