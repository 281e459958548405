/**
 * Docker's pull/push/load endpoints answer HTTP 200 and then report failure as an
 * `{"error": ...}` line inside the body. dockerode's followProgress does not fail on those;
 * this does, and it also fails when the stream is cut before its end.
 */
import { StringDecoder } from 'node:string_decoder';
import type { Readable } from 'node:stream';

export interface ProgressMessage {
  status?: string;
  stream?: string;
  id?: string;
  progressDetail?: { current?: number; total?: number };
  errorDetail?: { message?: string };
  error?: string;
  aux?: Record<string, unknown>;
}

export class StreamReportedError extends Error {
  constructor(
    message: string,
    readonly messages: ProgressMessage[],
  ) {
    super(message);
  }
}

/** Consume an NDJSON progress stream to its end. Resolves with every message; rejects on an in-band error. */
export async function followJson(
  stream: Readable,
  onMessage?: (m: ProgressMessage) => void,
): Promise<ProgressMessage[]> {
  const decoder = new StringDecoder('utf8');
  const all: ProgressMessage[] = [];
  let rest = '';
  let failed: StreamReportedError | undefined;
  const handle = (line: string) => {
    line = line.trim();
    if (!line) return;
    let m: ProgressMessage;
    try {
      m = JSON.parse(line) as ProgressMessage;
    } catch {
      m = { stream: line };
    }
    if (all.length < 10_000) all.push(m);
    onMessage?.(m);
    if ((m.errorDetail || m.error) && !failed)
      failed = new StreamReportedError(m.errorDetail?.message ?? m.error ?? 'unknown error', all);
    if (!failed && typeof m.stream === 'string' && /^Error /.test(m.stream))
      failed = new StreamReportedError(m.stream.trim(), all);
  };
  for await (const chunk of stream) {
    rest += decoder.write(chunk as Buffer);
    let i;
    while ((i = rest.indexOf('\n')) >= 0) {
      handle(rest.slice(0, i));
      rest = rest.slice(i + 1);
    }
  }
  handle(rest + decoder.end());
  if (failed) throw failed;
  return all;
}

/**
 * Bytes moved so far by a push or pull, from its progress messages: the sum of what each layer
 * has reported with `status` ('Pushing' or 'Downloading').
 */
export function layerBytes(status: string, onBytes: (n: number) => void): (m: ProgressMessage) => void {
  const per = new Map<string, number>();
  return (m) => {
    if (m.status === status && m.id && m.progressDetail?.current !== undefined) {
      per.set(m.id, m.progressDetail.current);
      onBytes([...per.values()].reduce((a, b) => a + b, 0));
    }
  };
}
