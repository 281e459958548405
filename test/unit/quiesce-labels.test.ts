import { describe, expect, it } from 'vitest';
import { excluded } from '../../src/cli/commands/backup.js';
import { UsageError } from '../../src/errors.js';
import { containerQuiesce } from '../../src/ops/steps/capture.js';

describe('containerQuiesce', () => {
  it("pause, with the container's own stop timeout, when nothing says otherwise", () => {
    expect(containerQuiesce('web', {}, {})).toEqual({ mode: 'pause' });
  });

  it('takes the ferry.consistency and ferry.stop-timeout labels', () => {
    expect(containerQuiesce('db', { 'ferry.consistency': 'stop', 'ferry.stop-timeout': '30' }, {})).toEqual({
      mode: 'stop',
      stopTimeout: 30,
    });
    expect(containerQuiesce('cache', { 'ferry.consistency': 'none' }, {})).toEqual({ mode: 'none' });
  });

  it('the command line wins over the labels, which are then not even judged', () => {
    expect(
      containerQuiesce(
        'db',
        { 'ferry.consistency': 'stop', 'ferry.stop-timeout': '30' },
        { consistency: 'pause', stopTimeout: 5 },
      ),
    ).toEqual({ mode: 'pause', stopTimeout: 5 });
    expect(
      containerQuiesce(
        'db',
        { 'ferry.consistency': 'freeze', 'ferry.stop-timeout': 'soon' },
        { consistency: 'stop', stopTimeout: 5 },
      ),
    ).toEqual({ mode: 'stop', stopTimeout: 5 });
  });

  it('refuses a label it does not understand, naming the container and the label', () => {
    expect(() => containerQuiesce('db', { 'ferry.consistency': 'freeze' }, {})).toThrow(UsageError);
    expect(() => containerQuiesce('db', { 'ferry.consistency': 'freeze' }, {})).toThrow(
      /db: its label ferry.consistency=freeze/,
    );
    expect(() => containerQuiesce('db', { 'ferry.stop-timeout': '1.5' }, {})).toThrow(
      /ferry.stop-timeout=1.5 is not a whole number/,
    );
  });
});

describe('excluded', () => {
  it('is the ferry.exclude label set to true, yes or 1', () => {
    for (const v of ['true', 'TRUE', 'yes', '1']) expect(excluded({ 'ferry.exclude': v })).toBe(true);
    for (const v of ['false', '0', '', 'no']) expect(excluded({ 'ferry.exclude': v })).toBe(false);
    expect(excluded({})).toBe(false);
    expect(excluded(undefined)).toBe(false);
  });
});
