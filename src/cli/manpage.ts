/**
 * ferry(1), the manual page, generated from the commander program itself (its commands, their
 * arguments and options, the global options, and the text each --help shows after the options:
 * examples, notes, the exit codes), so that it never falls behind the program. docs/ferry.1 is
 * this page, committed; `npm run man` writes it again, and a unit test fails when it differs.
 */
import type { Command, Help, Option } from 'commander';
import { VERSION } from '../version.js';

/** Text made safe for roff: backslashes, hyphens, and a `.` or `'` that would start a request. Pure. */
export function roffText(s: string): string {
  return s
    .split('\n')
    .map((line) => {
      const t = line.replace(/\\/g, '\\e').replace(/-/g, '\\-');
      return /^[.']/.test(t) ? `\\&${t}` : t;
    })
    .join('\n');
}

/** What --help prints after the options (addHelpText 'after'): examples, notes, exit codes. */
export function helpAfter(command: Command): string {
  let out = '';
  // commander keeps that text as a listener of the command's 'afterHelp' event (it is an EventEmitter).
  (command as unknown as NodeJS.EventEmitter).emit('afterHelp', {
    error: false,
    command,
    write: (s: string) => (out += s),
  });
  return out.replace(/^\n+|\s+$/g, '');
}

function optionItem(help: Help, o: Option): string {
  return `.TP\n.B ${roffText(o.flags)}\n${roffText(help.optionDescription(o))}`;
}

function optionList(help: Help, options: readonly Option[]): string[] {
  return options.filter((o) => !o.hidden).map((o) => optionItem(help, o));
}

/**
 * The text after the options, as the page shows it: `Title:` lines (Examples:, Exit codes:)
 * become bold sub-headings; everything else is kept as written (.nf: its columns line up).
 */
function afterBlock(text: string): string[] {
  if (!text) return [];
  const out: string[] = [];
  let block: string[] = [];
  const flush = () => {
    while (block.length && !block[block.length - 1]!.trim()) block.pop();
    if (block.length) out.push('.PP', '.RS 4', '.nf', roffText(block.join('\n')), '.fi', '.RE');
    block = [];
  };
  for (const line of text.split('\n')) {
    const title = /^([A-Z][A-Za-z ]*):$/.exec(line);
    if (title) {
      flush();
      out.push('.PP', `.B ${roffText(title[1]!)}`);
    } else if (block.length || line.trim()) block.push(line);
  }
  flush();
  return out;
}

/** ferry(1) in roff (man macros), from `program`. Pure: the same program gives the same page. */
export function manPage(program: Command): string {
  const help = program.createHelp();
  const name = program.name();
  const lines: string[] = [
    `.\\" Generated from ferry's commands by src/cli/manpage.ts (npm run man). Do not edit.`,
    `.TH ${name.toUpperCase()} 1 "" "${name} ${VERSION}" "User Commands"`,
    '.SH NAME',
    `${name} \\- ${roffText(
      program
        .description()
        .replace(/\.$/, '')
        .replace(/^./, (c) => c.toLowerCase()),
    )}`,
    '.SH SYNOPSIS',
    `.B ${name}`,
    '[\\fIglobal options\\fR]',
    '\\fIcommand\\fR',
    '[\\fIoptions\\fR]',
    '[\\fIarguments\\fR]',
    '.SH DESCRIPTION',
    roffText(program.description()),
    'Each command is described below with its arguments and options; the global options work',
    'before or after the command.',
    'Every option can also be set by a FERRY_* environment variable or a config file',
    '(see \\fBferry config\\fR);',
    'the command line wins over the environment, which wins over the file.',
    '.SH GLOBAL OPTIONS',
    ...optionList(help, program.options),
    '.TP',
    '.B \\-h, \\-\\-help',
    'display help for ferry or a command',
    '.SH COMMANDS',
  ];
  for (const c of program.commands) {
    const ch = c.createHelp();
    lines.push(`.SS "${name} ${roffText(c.name())} ${roffText(c.usage())}"`, roffText(c.description()));
    const args = ch.visibleArguments(c);
    if (args.length) {
      lines.push('.PP', 'Arguments:', '.RS 4');
      for (const a of args) lines.push('.TP', `.I ${roffText(a.name())}`, roffText(ch.argumentDescription(a)));
      lines.push('.RE');
    }
    const opts = optionList(ch, c.options);
    if (opts.length) lines.push('.PP', 'Options:', '.RS 4', ...opts, '.RE');
    lines.push(...afterBlock(helpAfter(c)));
  }
  const exit = helpAfter(program).replace(/^Exit codes:\n/, '');
  lines.push('.SH EXIT STATUS', '.nf', roffText(exit), '.fi');
  lines.push(
    '.SH FILES',
    '.TP',
    '.I ~/.config/ferry/ferry.toml, /etc/ferry/ferry.toml',
    'the settings file (or \\fB\\-\\-config\\fR, FERRY_CONFIG)',
    '.SH SEE ALSO',
    '.BR docker (1),',
    '.BR tar (1),',
    '.BR age (1);',
    "docs/commands.md and docs/format.md in ferry's source",
    '',
  );
  return lines.join('\n');
}
