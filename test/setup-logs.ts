import { configureLogging } from '../src/log.ts';

// Test runs stay readable: components log warnings and errors only (tests that scan logs capture their own).
configureLogging({ level: process.env.LOG_LEVEL ?? 'warn' });
