"""Sets up a moto server for the ransomware-resistance tests: a bucket (versioned, optionally
with Object Lock) and IAM users with the policies the README gives operators, then turns IAM
enforcement on. Prints the users' access keys as JSON on stdout.

Usage: moto_admin.py ENDPOINT BUCKET [--object-lock | --no-versioning]

Run with the Python of moto's venv (scripts/setup-test-deps installs it). moto checks the
operation name as the action (s3:ListObjectVersions, s3:HeadObject, s3:DeleteObjects), so the
writer's policy denies those names as well as the ones AWS uses.
"""

import json
import sys

import boto3
import requests


def admin(endpoint, path, body):
    requests.post(endpoint + path, data=body, timeout=30).raise_for_status()


def main():
    endpoint, bucket = sys.argv[1], sys.argv[2]
    object_lock = "--object-lock" in sys.argv[3:]
    versioning = "--no-versioning" not in sys.argv[3:]
    # No IAM checks while setting up (moto counts requests until enforcement starts).
    admin(endpoint, "/moto-api/reset", b"")
    admin(endpoint, "/moto-api/reset-auth", b"1000000")
    kw = dict(endpoint_url=endpoint, region_name="us-east-1",
              aws_access_key_id="admin", aws_secret_access_key="admin")
    s3 = boto3.client("s3", **kw)
    iam = boto3.client("iam", **kw)
    if object_lock:
        s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    else:
        s3.create_bucket(Bucket=bucket)
        if versioning:
            s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    arn = f"arn:aws:s3:::{bucket}"
    policies = {
        # Backs up: reads, lists and writes, never deletes, never shortens a lock, never
        # changes the bucket's versioning, lock or lifecycle.
        "writer": {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": "s3:*", "Resource": [arn, arn + "/*"]},
                {"Effect": "Deny", "Action": [
                    "s3:DeleteObject", "s3:DeleteObjectVersion", "s3:DeleteObjects",
                    "s3:BypassGovernanceRetention", "s3:PutBucketVersioning",
                    "s3:PutBucketObjectLockConfiguration", "s3:PutObjectLockConfiguration",
                    "s3:PutBucketLifecycleConfiguration", "s3:PutLifecycleConfiguration",
                    "s3:DeleteBucket", "s3:PutBucketPolicy",
                ], "Resource": [arn, arn + "/*"]},
            ],
        },
        # Prunes: may delete (a delete marker on a versioned bucket; a locked version stays).
        "pruner": {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": "s3:*", "Resource": [arn, arn + "/*"]},
                {"Effect": "Deny", "Action": [
                    "s3:BypassGovernanceRetention", "s3:PutBucketVersioning",
                    "s3:PutBucketObjectLockConfiguration", "s3:PutObjectLockConfiguration",
                    "s3:DeleteBucket",
                ], "Resource": [arn, arn + "/*"]},
            ],
        },
        # The attacker of the tests: any key, full rights on objects (a stolen prune key).
        "attacker": {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": "s3:*", "Resource": [arn, arn + "/*"]},
            ],
        },
    }
    keys = {}
    for user, policy in policies.items():
        iam.create_user(UserName=user)
        iam.put_user_policy(UserName=user, PolicyName=f"hopsdr-{user}",
                            PolicyDocument=json.dumps(policy))
        k = iam.create_access_key(UserName=user)["AccessKey"]
        keys[user] = {"access_key_id": k["AccessKeyId"], "secret_access_key": k["SecretAccessKey"]}
    # From now on every request is checked against the users' policies.
    admin(endpoint, "/moto-api/reset-auth", b"0")
    json.dump(keys, sys.stdout)


if __name__ == "__main__":
    main()
