/// <reference types="vitest/config" />
import { defineConfig, type Plugin } from 'vite'
import vue from '@vitejs/plugin-vue'
import tailwindcss from '@tailwindcss/vite'
import { fileURLToPath, URL } from 'node:url'
import { readFileSync } from 'node:fs'

/**
 * Emits `sw.js` with the list of every file of the build (the app shell), so the service worker
 * can precache all hashed assets at install time and a reload while offline works.
 */
function serviceWorker(): Plugin {
  return {
    name: 'finwise-service-worker',
    apply: 'build',
    generateBundle(_options, bundle) {
      const files = Object.keys(bundle).map((f) => '/' + f)
      const version = Date.now().toString(36)
      const template = readFileSync(fileURLToPath(new URL('./src/sw-template.js', import.meta.url)), 'utf8')
      const source = template
        .replace('__SHELL_FILES__', JSON.stringify(['/', ...files.filter((f) => f !== '/index.html' && f !== '/sw.js')]))
        .replace('__CACHE_VERSION__', JSON.stringify(version))
      this.emitFile({ type: 'asset', fileName: 'sw.js', source })
    },
  }
}

const backend = process.env.FINWISE_DEV_BACKEND ?? 'http://127.0.0.1:8000'

export default defineConfig({
  plugins: [vue(), tailwindcss(), serviceWorker()],
  resolve: { alias: { '@': fileURLToPath(new URL('./src', import.meta.url)) } },
  build: { outDir: 'dist', emptyOutDir: true, target: 'es2022' },
  server: {
    proxy: {
      '/ws_finwise': { target: backend.replace(/^http/, 'ws'), ws: true },
      '^/(login|register|token|tenants|ping)': { target: backend },
    },
  },
  test: {
    environment: 'node',
    include: ['tests/**/*.test.ts'],
    setupFiles: ['tests/setup.ts'],
  },
})
