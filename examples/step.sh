#!/bin/sh
# One step of examples/pipeline.jsonl: runs the task's description as a shell command.
# `abathur worker` hands the task over as one line of JSON on stdin; the description is read
# out of it with sed, so the example's descriptions avoid backslash escapes other than \".
task=$(cat)
command=$(printf '%s\n' "$task" | sed -n 's/.*"description":"\(\([^"\\]\|\\"\)*\)".*/\1/p' | sed 's/\\"/"/g')
if [ -z "$command" ]; then
    echo "task $ABATHUR_TASK_ID has no description to run" >&2
    exit 2
fi
exec sh -c "$command"
