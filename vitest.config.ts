// Vitest configuration. Written as CommonJS because package.json has no "type": "module" (an ESM
// config here makes Vite warn that it loads it as CommonJS).
module.exports = {
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60000,
    hookTimeout: 60000,
    pool: 'forks',
  },
};
