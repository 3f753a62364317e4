package cli

import (
	"fmt"
	"io"

	ucli "github.com/urfave/cli/v2"
)

// The bash and zsh scripts ask commy itself for the words that may follow
// (urfave/cli's --generate-bash-completion); fish gets a static list.
const bashCompletion = `# bash completion for commy
_commy() {
  local cur words
  cur="${COMP_WORDS[COMP_CWORD]}"
  words=("${COMP_WORDS[@]:0:COMP_CWORD}")
  local opts
  if [[ "$cur" == -* ]]; then
    opts=$("${words[@]}" "$cur" --generate-bash-completion 2>/dev/null)
  else
    opts=$("${words[@]}" --generate-bash-completion 2>/dev/null)
  fi
  COMPREPLY=($(compgen -W "$opts" -- "$cur"))
}
complete -o bashdefault -o default -F _commy commy
`

const zshCompletion = `#compdef commy
# zsh completion for commy
_commy() {
  local -a opts
  local cur=${words[-1]}
  if [[ "$cur" == -* ]]; then
    opts=("${(@f)$(${words[@]:0:#words[@]-1} $cur --generate-bash-completion 2>/dev/null)}")
  else
    opts=("${(@f)$(${words[@]:0:#words[@]-1} --generate-bash-completion 2>/dev/null)}")
  fi
  if [[ "${opts[1]}" != "" ]]; then
    _describe 'values' opts
  else
    _files
  fi
}
if [[ "$funcstack[1]" == "_commy" ]]; then
  _commy "$@"
else
  compdef _commy commy
fi
`

func completionCommand() *ucli.Command {
	return &ucli.Command{
		Name: "completion", Usage: "print the shell completion script for bash, zsh or fish", ArgsUsage: "bash|zsh|fish",
		Description: "`make install` installs all three. By hand:\n" +
			"  commy completion bash > /etc/bash_completion.d/commy\n" +
			"  commy completion zsh > /usr/local/share/zsh/site-functions/_commy\n" +
			"  commy completion fish > ~/.config/fish/completions/commy.fish",
		Action: func(c *ucli.Context) error {
			a, err := args(c, 1, 1)
			if err != nil {
				return err
			}
			return writeCompletion(c.App, a[0], c.App.Writer)
		},
	}
}

func writeCompletion(app *ucli.App, shell string, w io.Writer) error {
	var script string
	switch shell {
	case "bash":
		script = bashCompletion
	case "zsh":
		script = zshCompletion
	case "fish":
		s, err := app.ToFishCompletion()
		if err != nil {
			return fmt.Errorf("fish completion: %w", err)
		}
		script = s
	default:
		return usagef("unknown shell %q: want bash, zsh or fish", shell)
	}
	_, err := io.WriteString(w, script)
	return err
}
