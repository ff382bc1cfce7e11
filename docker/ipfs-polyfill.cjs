// js-ipfs 0.66.1 on Debian bookworm's Node 18: CustomEvent became global only in Node 19, and
// some dependencies call Promise.withResolvers (Node 22). Loaded with NODE_OPTIONS=--require.
'use strict';

if (typeof globalThis.CustomEvent !== 'function') {
  globalThis.CustomEvent = class CustomEvent extends Event {
    constructor(type, options) {
      super(type, options);
      this.detail = options && options.detail !== undefined ? options.detail : null;
    }
  };
}

if (typeof Promise.withResolvers !== 'function') {
  Object.defineProperty(Promise, 'withResolvers', {
    configurable: true,
    writable: true,
    enumerable: false,
    value: function withResolvers() {
      let resolve;
      let reject;
      const promise = new this((res, rej) => {
        resolve = res;
        reject = rej;
      });
      return { promise, resolve, reject };
    },
  });
}
