/**
 * Bulk byte streams from the engine (a volume's archive, a saved image), read straight off the
 * socket: a hand-written HTTP/1.1 client in place of docker-modem's, for bulk GETs only. It stands
 * in for a dependency's internals, so it lives here and nowhere else.
 *
 * What it replaces: docker-modem reads a response through Node's http client, where every piece
 * the engine writes (32 KiB) arrives as a Buffer of its own, goes through the HTTP parser and is
 * pushed on its own. Here one plain HTTP/1.1 GET is sent on a socket of its own, the socket reads
 * (`onread`) into 1 MiB slabs, the chunked framing is taken out in place, and each slab is pushed
 * once (slabs come from, and go back to, a pool: util/slabs.ts).
 *
 * Why: one push per slab instead of one per 32 KiB piece. Through the http client a large archive
 * cost ferry far more CPU and wall time than `docker cp` reading the same one; read this way it is
 * faster than `docker cp` (the gain: see docs/performance.md, Bulk reads off the engine socket).
 *
 * Only for engines reached over a unix socket or plain TCP; TLS and ssh:// engines go through
 * dockerode. Errors carry docker-modem's fields (`statusCode`; `json`, which docker-modem leaves
 * null for a streamed response and puts the engine's message in `message`), so Engine maps them
 * the same.
 *
 * Guarded by test/unit/bulk-dockerode.test.ts: the same engine calls made through this module and
 * through dockerode must send the same request line and give the same bytes and the same errors,
 * so a change in docker-modem's request or error shape fails there. test/unit/bulk.test.ts checks
 * the framing itself.
 */
import net from 'node:net';
import { Readable } from 'node:stream';
import { SLAB_SIZE as SLAB, releaseSlab, takeSlab } from '../util/slabs.js';

/** A slab with less room than this is pushed, and the next read goes into a new one. */
const MIN_ROOM = 64 * 1024;
/** A partly filled slab is pushed when nothing more arrives for this long (a slow stream still flows). */
const IDLE_MS = 20;
/** Headers and error bodies are small; more than this is not an engine talking. */
const MAX_HEAD = 64 * 1024;

export type BulkAddress = { path: string } | { host: string; port: number };

type BulkError = Error & { statusCode?: number; json?: unknown; code?: string };

type State = 'head' | 'size' | 'data' | 'data-crlf' | 'trailer' | 'done';

/**
 * GET `urlPath` and resolve with the body as a stream once the engine answered 2xx; reject with
 * the engine's error (statusCode, json) otherwise. Destroying the stream closes the connection.
 * A body that stops before its end (the last chunk, or Content-Length) fails the stream with
 * code ECONNRESET; malformed framing with EPROTO.
 */
export function bulkGet(address: BulkAddress, urlPath: string): Promise<Readable> {
  return new Promise((resolve, reject) => {
    let settled = false;
    let slab = takeSlab();
    let fill = 0; // bytes of the slab in use: decoded body [0, fill), or, before the body, the head
    let state: State = 'head';
    let framing: 'chunked' | 'length' | 'close' = 'close';
    let left = 0; // bytes left in the current chunk (or the whole body, for a Content-Length one)
    let line = ''; // a chunk-size or trailer line being read, across reads
    let cr = 0; // bytes of a chunk's closing CRLF seen
    let status = 0;
    let errorBody: Buffer[] | undefined; // a non-2xx answer's body, collected for the message
    let errorBytes = 0;
    let paused = false;
    let timer: NodeJS.Timeout | undefined;
    let closed = false; // the socket is gone and the slab being filled went back to the pool

    const out = new Readable({
      highWaterMark: 4 * SLAB,
      read() {
        if (paused) {
          paused = false;
          sock.resume();
        }
      },
      destroy(err, cb) {
        clearTimeout(timer);
        close();
        cb(err);
      },
    });

    const fail = (err: BulkError) => {
      clearTimeout(timer);
      if (closed) return; // already over (failed, or destroyed by the consumer): nobody to tell
      if (!settled) {
        settled = true;
        close();
        reject(err);
      } else out.destroy(err);
    };

    /**
     * Hand the decoded bytes on: the slab itself (`whole`), or a copy. The slab may only leave
     * from within a read callback (or once the socket is done): the socket reads into the region
     * handed out after the previous read, and that region must stay in a slab this reader owns,
     * never in one that went on and may be back in the pool, serving another reader.
     */
    const flush = (whole: boolean) => {
      clearTimeout(timer);
      timer = undefined;
      if (fill === 0) return;
      let chunk: Buffer;
      if (whole && fill >= MIN_ROOM) {
        chunk = slab.subarray(0, fill);
        slab = takeSlab();
      } else chunk = Buffer.from(slab.subarray(0, fill));
      fill = 0;
      if (errorBody) {
        errorBytes += chunk.length;
        if (errorBytes <= MAX_HEAD) errorBody.push(chunk);
        return;
      }
      if (!out.push(chunk)) paused = true;
    };

    const finish = () => {
      state = 'done';
      sock.destroy(); // no read lands anywhere any more
      flush(true);
      if (errorBody) {
        fail(engineError(status, Buffer.concat(errorBody).toString('utf8')));
        return;
      }
      out.push(null);
      close();
    };

    /** Stop reading for good, then give the slab being filled back (no read can land in it now). */
    const close = () => {
      sock.destroy();
      if (closed) return; // once: by now the slab may serve another reader
      closed = true;
      releaseSlab(slab);
    };

    /** Parse the status line and headers in slab[0, end); the body starts at `end`. */
    const head = (end: number) => {
      const lines = slab.toString('latin1', 0, end).split('\r\n');
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0] ?? '');
      if (!m)
        return fail(
          Object.assign(
            new Error(
              `the engine answered something other than HTTP: ${JSON.stringify((lines[0] ?? '').slice(0, 80))}`,
            ),
            { code: 'EPROTO' },
          ),
        );
      status = Number(m[1]);
      const headers = new Map<string, string>();
      for (const l of lines.slice(1)) {
        const i = l.indexOf(':');
        if (i > 0) headers.set(l.slice(0, i).trim().toLowerCase(), l.slice(i + 1).trim());
      }
      if (/\bchunked\b/i.test(headers.get('transfer-encoding') ?? '')) {
        framing = 'chunked';
        state = 'size';
      } else if (headers.has('content-length')) {
        framing = 'length';
        left = Number(headers.get('content-length'));
        state = left > 0 ? 'data' : 'done';
      } else {
        framing = 'close';
        state = 'data';
      }
      if (status < 200 || status > 299) errorBody = [];
    };

    /** Decode slab[from, to) (just read) in place: body bytes move down to `fill`, framing goes. */
    const decode = (from: number, to: number) => {
      let p = from;
      while (p < to && state !== 'done') {
        switch (state) {
          case 'head':
            return; // decode runs only once the head has been read
          case 'data': {
            const n = framing === 'close' ? to - p : Math.min(left, to - p);
            if (p !== fill) slab.copyWithin(fill, p, p + n);
            fill += n;
            p += n;
            if (framing !== 'close') {
              left -= n;
              if (left === 0) {
                if (framing === 'length') state = 'done';
                else {
                  state = 'data-crlf';
                  cr = 0;
                }
              }
            }
            break;
          }
          case 'data-crlf':
            if (slab[p] !== (cr === 0 ? 0x0d : 0x0a)) return fail(protocolError('a chunk does not end in CRLF'));
            p++;
            if (++cr === 2) state = 'size';
            break;
          case 'size':
          case 'trailer': {
            const c = slab[p++]!;
            if (c !== 0x0a) {
              line += String.fromCharCode(c);
              if (line.length > 1024) return fail(protocolError('a chunk header is too long'));
              break;
            }
            const text = line.replace(/\r$/, '');
            line = '';
            if (state === 'trailer') {
              if (text === '') state = 'done';
              break;
            }
            const size = /^[0-9a-fA-F]+/.exec(text);
            if (!size) return fail(protocolError(`bad chunk size ${JSON.stringify(text.slice(0, 20))}`));
            left = parseInt(size[0], 16);
            state = left === 0 ? 'trailer' : 'data';
            break;
          }
        }
      }
      if (state === 'done') finish();
    };

    const onRead = (nread: number, buf: Buffer): boolean => {
      if (state === 'done') return true; // anything after the end is ignored
      // The socket reads into the region handed out after the previous read; a flush since (the
      // idle timer) has reset `fill`, so the bytes may sit further up this slab: bring them down.
      if (buf.byteOffset !== slab.byteOffset + fill) buf.copy(slab, fill, 0, nread);
      const from = fill;
      const to = fill + nread;
      if (state === 'head') {
        fill = to;
        // Only in what was read: past `to`, a pooled slab holds an earlier stream's bytes.
        const end = slab.subarray(0, to).indexOf('\r\n\r\n', Math.max(0, from - 3), 'latin1');
        if (end < 0) {
          if (fill > MAX_HEAD) fail(protocolError('the response headers are too long'));
          return true;
        }
        fill = 0;
        head(end);
        if (state === 'head' || sock.destroyed) return true; // failed
        decode(end + 4, to);
        // Settled only now: body bytes that came with the head may already have failed it, and
        // the stream must not error before its consumer has it.
        if (!settled && !errorBody) {
          settled = true;
          resolve(out);
        }
      } else decode(from, to);
      if ((state as State) === 'done') return true;
      if (SLAB - fill < MIN_ROOM) flush(true);
      else if (fill > 0 && !timer) timer = setTimeout(flush, IDLE_MS, false);
      return !paused;
    };

    const sock = net.connect({
      ...address,
      onread: { buffer: () => slab.subarray(fill), callback: onRead },
    });
    sock.setNoDelay(true);
    sock.on('connect', () =>
      sock.write(`GET ${urlPath} HTTP/1.1\r\nHost: docker\r\nUser-Agent: ferry\r\nConnection: close\r\n\r\n`),
    );
    sock.on('end', () => {
      if (state === 'done') return;
      if (state === 'data' && framing === 'close') return finish();
      fail(
        Object.assign(new Error('the engine closed the connection before the end of the stream'), {
          code: 'ECONNRESET',
        }),
      );
    });
    sock.on('error', (err) => fail(err));
    sock.on('close', () => {
      if (state !== 'done')
        fail(
          Object.assign(new Error('the connection to the engine closed before the end of the stream'), {
            code: 'ECONNRESET',
          }),
        );
    });
  });
}

function protocolError(what: string): BulkError {
  return Object.assign(new Error(`the engine's response is malformed: ${what}`), { code: 'EPROTO' });
}

/** The error docker-modem would give for the same answer: `(HTTP code N) ...` with the JSON body. */
function engineError(status: number, body: string): BulkError {
  let json: unknown = body;
  try {
    json = JSON.parse(body);
  } catch {
    /* not JSON: keep the text */
  }
  const msg =
    json && typeof json === 'object' && typeof (json as { message?: unknown }).message === 'string'
      ? (json as { message: string }).message
      : body.trim();
  return Object.assign(new Error(`(HTTP code ${status}) ${msg}`), { statusCode: status, json });
}
