#!/usr/bin/env python3
"""Inspects and prepares object stores for the end-to-end tests (tests/src/stores.rs).

An independent client (boto3, azure-storage-blob) rather than Ferry's own code,
so a signing or protocol bug in Ferry is not shared by the checks.

    objstore.py s3 ENDPOINT REGION ACCESS_KEY SECRET_KEY OP ARGS...
    objstore.py azure BLOB_ENDPOINT ACCOUNT KEY OP ARGS...

S3 ops: create-bucket B | put B KEY (body on stdin) | get B KEY (body on stdout)
| list B PREFIX PAGE_SIZE | uploads B | create-multipart B KEY | upload-part B KEY ID N
(stdin) | abort-multipart B KEY ID
Azure ops: create-container C | put C BLOB (stdin) | get C BLOB (stdout)
| list C PREFIX PAGE_SIZE | uncommitted C | stage-block C BLOB BLOCK_ID (stdin)

JSON results go to stdout. A missing object exits 3; any other error reported
by the store exits 2 with {"status", "code", "message"} as the last line of
stderr.
"""

import json
import sys

NOT_FOUND = 3
STORE_ERROR = 2


def fail(status, code, message):
    sys.stderr.write(json.dumps({"status": status, "code": code, "message": message}) + "\n")
    sys.exit(STORE_ERROR)


def out_json(value):
    sys.stdout.write(json.dumps(value))


def s3(endpoint, region, access_key, secret_key, op, args):
    import boto3
    import botocore.config
    import botocore.exceptions

    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        config=botocore.config.Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            retries={"max_attempts": 1, "mode": "standard"},
            # Plain Content-Length bodies: no aws-chunked trailers, which
            # not every emulator reads.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )
    try:
        if op == "create-bucket":
            (bucket,) = args
            client.create_bucket(Bucket=bucket)
        elif op == "put":
            bucket, key = args
            client.put_object(Bucket=bucket, Key=key, Body=sys.stdin.buffer.read())
        elif op == "get":
            bucket, key = args
            body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
            sys.stdout.buffer.write(body)
        elif op == "list":
            bucket, prefix, page_size = args
            items = []
            pages = client.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": int(page_size)}
            )
            for page in pages:
                items += [[o["Key"], o["Size"]] for o in page.get("Contents", [])]
            out_json(items)
        elif op == "uploads":
            (bucket,) = args
            uploads = []
            for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket):
                uploads += [[u["Key"], u["UploadId"]] for u in page.get("Uploads", [])]
            out_json(uploads)
        elif op == "create-multipart":
            bucket, key = args
            out_json(client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"])
        elif op == "upload-part":
            bucket, key, upload_id, number = args
            r = client.upload_part(
                Bucket=bucket,
                Key=key,
                UploadId=upload_id,
                PartNumber=int(number),
                Body=sys.stdin.buffer.read(),
            )
            out_json(r["ETag"])
        elif op == "abort-multipart":
            bucket, key, upload_id = args
            client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        else:
            fail(0, "BadUsage", f"unknown s3 op {op}")
    except botocore.exceptions.ClientError as e:
        err = e.response.get("Error", {})
        status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        code = str(err.get("Code", ""))
        if op == "get" and code in ("NoSuchKey", "404"):
            sys.exit(NOT_FOUND)
        fail(status, code, str(err.get("Message", e)))


def azure(endpoint, account, key, op, args):
    from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
    from azure.storage.blob import BlobServiceClient

    service = BlobServiceClient(
        account_url=endpoint,
        credential={"account_name": account, "account_key": key},
        retry_total=0,
    )
    try:
        if op == "create-container":
            (container,) = args
            service.create_container(container)
        elif op == "put":
            container, blob = args
            service.get_blob_client(container, blob).upload_blob(sys.stdin.buffer.read(), overwrite=True)
        elif op == "get":
            container, blob = args
            try:
                body = service.get_blob_client(container, blob).download_blob().readall()
            except ResourceNotFoundError as e:
                if e.error_code == "BlobNotFound":
                    sys.exit(NOT_FOUND)
                raise
            sys.stdout.buffer.write(body)
        elif op == "list":
            container, prefix, page_size = args
            blobs = service.get_container_client(container).list_blobs(
                name_starts_with=prefix or None, results_per_page=int(page_size)
            )
            out_json([[b.name, b.size] for b in blobs])
        elif op == "uncommitted":
            # Every blob holding uncommitted blocks, with those blocks
            # (blobs never committed appear only with this include).
            (container,) = args
            cc = service.get_container_client(container)
            result = []
            for b in cc.list_blobs(include=["uncommittedblobs"]):
                _, uncommitted = cc.get_blob_client(b.name).get_block_list("uncommitted")
                if uncommitted:
                    result.append([b.name, [[blk.id, blk.size] for blk in uncommitted]])
            out_json(result)
        elif op == "stage-block":
            container, blob, block_id = args
            service.get_blob_client(container, blob).stage_block(block_id, sys.stdin.buffer.read())
        else:
            fail(0, "BadUsage", f"unknown azure op {op}")
    except HttpResponseError as e:
        code = getattr(e.error_code, "value", e.error_code) or ""
        fail(e.status_code or 0, str(code), str(e.reason or e.message))


def main():
    kind, rest = sys.argv[1], sys.argv[2:]
    if kind == "s3":
        s3(*rest[:5], rest[5:])
    elif kind == "azure":
        azure(*rest[:4], rest[4:])
    else:
        fail(0, "BadUsage", f"unknown store kind {kind}")


if __name__ == "__main__":
    main()
