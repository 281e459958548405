import { Argument, Command } from 'commander';
import { completionScript, SHELLS, type Shell } from '../completion.js';
import { setExit, type Deps } from '../program.js';

export function completionCommand(program: Command, deps: Deps): Command {
  return new Command('completion')
    .description('Print the shell completion script for bash, zsh or fish (commands and their options)')
    .addArgument(new Argument('<shell>', 'the shell').choices(SHELLS))
    .addHelpText(
      'after',
      `
The script is generated from ferry's own commands and options, so it is always current.

Examples:
  source <(ferry completion bash)                                   # this shell only
  ferry completion bash | sudo tee /etc/bash_completion.d/ferry     # every bash
  ferry completion zsh > "\${fpath[1]}/_ferry"                      # zsh
  ferry completion fish > ~/.config/fish/completions/ferry.fish`,
    )
    .action((shell: Shell) => {
      const g = program.opts<{ json?: boolean }>();
      deps.setJson(!!g.json);
      const script = completionScript(shell, program);
      if (g.json) deps.emit('completion', { ok: true, shell, script });
      else deps.io.stdout.write(script);
      setExit(program, 0);
    });
}
