// Presigned links to exports (SigV4 query signing by the AWS SDK's presigner: a well-kept
// signer rather than one of our own; the worker's C signer is tested against AWS's suite, this
// side against s3rver). Configured from the worker's own S3 settings.

import { GetObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';

export interface Presigner {
  /** A GET URL of key valid `seconds`, downloaded as `filename`. */
  presign(key: string, seconds: number, filename: string): Promise<string>;
}

export interface S3LinkConfig {
  bucket: string;
  region: string;
  endpoint?: string;
  forcePathStyle: boolean;
}

/** From BACKUP_STORE, S3_BUCKET, S3_ENDPOINT, S3_FORCE_PATH_STYLE, AWS_REGION; null for a file
 * store (nothing to presign: exports need S3). Credentials: the SDK's chain (AWS_ACCESS_KEY_ID
 * and AWS_SECRET_ACCESS_KEY, or a web identity), as the worker's. */
export function s3LinkConfigFromEnv(env: NodeJS.ProcessEnv): S3LinkConfig | null {
  if ((env.BACKUP_STORE ?? 's3') !== 's3') return null;
  return {
    bucket: env.S3_BUCKET || 'pedidolist-backups',
    region: env.AWS_REGION || 'us-east-1',
    endpoint: env.S3_ENDPOINT || undefined,
    forcePathStyle: env.S3_FORCE_PATH_STYLE === 'true',
  };
}

export function createPresigner(cfg: S3LinkConfig): Presigner {
  const client = new S3Client({ region: cfg.region, endpoint: cfg.endpoint, forcePathStyle: cfg.forcePathStyle });
  return {
    presign(key, seconds, filename) {
      const cmd = new GetObjectCommand({
        Bucket: cfg.bucket,
        Key: key,
        ResponseContentDisposition: `attachment; filename="${filename.replace(/[^A-Za-z0-9._-]/g, '_')}"`,
        ResponseContentType: 'application/gzip',
      });
      return getSignedUrl(client, cmd, { expiresIn: seconds });
    },
  };
}
