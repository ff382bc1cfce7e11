// Promise.withResolvers polyfill for js-ipfs 0.66 under Node 20.
// Some of js-ipfs's transitive dependencies (it-queue via mortice) call Promise.withResolvers,
// which Node ships only from v22. Load with: NODE_OPTIONS="--require <repo>/scripts/ipfs-polyfill.cjs".
'use strict';

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
