import tseslint from 'typescript-eslint'
import layering from './eslint.layering.js'

export default tseslint.config(
  { ignores: ['node_modules/**', 'data/**', '.tap/**', 'bench/out/**'] },
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/no-non-null-assertion': 'off',
      'no-constant-condition': ['error', { checkLoops: false }],
      eqeqeq: ['error', 'always', { null: 'ignore' }],
    },
  },
  {
    files: ['proto/**/*.ts', 'gateway/**/*.ts', 'control/**/*.ts', 'agent/**/*.ts'],
    plugins: { layering },
    rules: {
      'layering/imports': 'error',
      // pino repeats a bound key in every record: nested modules go through proto/log.ts moduleLogger.
      'no-restricted-syntax': ['error', {
        selector: "CallExpression[callee.property.name='child'] > ObjectExpression > Property[key.name='module']",
        message: 'use moduleLogger(parent, name) from proto/log.ts: a second `module` binding repeats the key in every record',
      }],
    },
  },
)
