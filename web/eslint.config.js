// ESLint flat config: the recommended rules of ESLint, typescript-eslint and eslint-plugin-vue
// (Vue 3) over src/, tests/, e2e/ and vite.config.ts. `npm run lint` allows no warnings.
import js from '@eslint/js'
import { defineConfig, globalIgnores } from 'eslint/config'
import pluginVue from 'eslint-plugin-vue'
import globals from 'globals'
import tseslint from 'typescript-eslint'

export default defineConfig(
  globalIgnores(['dist/', 'e2e/screenshots/', 'e2e/.tmp/']),

  { files: ['**/*.{js,mjs,ts,vue}'], extends: [js.configs.recommended] },
  tseslint.configs.recommended,
  pluginVue.configs['flat/recommended'],
  // Formatting is not linted (the templates keep their compact style; reflowing them would be churn).
  pluginVue.configs['no-layout-rules'],

  // <script setup lang="ts"> is TypeScript: parse it with typescript-eslint.
  { files: ['**/*.vue'], languageOptions: { parserOptions: { parser: tseslint.parser } } },

  // The app runs in the browser, the service worker in its own global scope.
  { files: ['src/**/*.{ts,vue}'], languageOptions: { globals: globals.browser } },
  {
    // The two placeholders are replaced with literals when vite.config.ts emits dist/sw.js.
    files: ['src/sw-template.js'],
    languageOptions: { globals: { ...globals.serviceworker, __CACHE_VERSION__: 'readonly', __SHELL_FILES__: 'readonly' } },
  },
  // Tests and tooling run in Node; the e2e scripts also hand callbacks to the browser page.
  { files: ['tests/**', 'vite.config.ts', 'eslint.config.js'], languageOptions: { globals: globals.node } },
  { files: ['e2e/**'], languageOptions: { globals: { ...globals.node, ...globals.browser } } },
)
