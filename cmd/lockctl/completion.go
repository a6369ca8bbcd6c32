package main

import (
	"fmt"

	"github.com/urfave/cli/v2"
)

// The completion scripts ask lockctl itself for the candidates:
// urfave/cli answers `lockctl ARGS... --generate-bash-completion` with
// the commands (or, after a -, the flags) that may come next.

const bashCompletion = `# lockctl completion for bash: source <(lockctl completion bash)
_lockctl_complete() {
    local words=("${COMP_WORDS[@]:1:COMP_CWORD-1}")
    local cur="${COMP_WORDS[COMP_CWORD]}"
    local IFS=$'\n'
    if [[ "$cur" == -* ]]; then
        COMPREPLY=($(compgen -W "$("${COMP_WORDS[0]}" "${words[@]}" "$cur" --generate-bash-completion 2>/dev/null)" -- "$cur"))
    else
        COMPREPLY=($(compgen -W "$("${COMP_WORDS[0]}" "${words[@]}" --generate-bash-completion 2>/dev/null)" -- "$cur"))
    fi
}
complete -o default -F _lockctl_complete lockctl
`

const zshCompletion = `#compdef lockctl
# lockctl completion for zsh: source <(lockctl completion zsh)
_lockctl() {
    local -a candidates
    local cur="${words[CURRENT]}"
    if [[ "$cur" == -* ]]; then
        candidates=("${(@f)$(${words[1]} ${words[2,CURRENT-1]} "$cur" --generate-bash-completion 2>/dev/null)}")
    else
        candidates=("${(@f)$(${words[1]} ${words[2,CURRENT-1]} --generate-bash-completion 2>/dev/null)}")
    fi
    if [[ -n "${candidates[*]}" ]]; then
        _describe 'lockctl' candidates
    else
        _files
    fi
}
if [[ "$funcstack[1]" == "_lockctl" ]]; then
    _lockctl "$@"
else
    compdef _lockctl lockctl
fi
`

func completionCommand(a *app) *cli.Command {
	return &cli.Command{
		Name:      "completion",
		Usage:     "print a shell completion script: source <(lockctl completion bash)",
		ArgsUsage: "bash|zsh",
		Action: func(c *cli.Context) error {
			as, err := args(c, "completion", 1, 1, "bash|zsh")
			if err != nil {
				return err
			}
			switch as[0] {
			case "bash":
				_, err = fmt.Fprint(a.io.out, bashCompletion)
			case "zsh":
				_, err = fmt.Fprint(a.io.out, zshCompletion)
			default:
				return usagef("completion", "shell %q: lockctl completes bash and zsh", as[0])
			}
			return err
		},
	}
}
